package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGreeting(t *testing.T) {
	record(t)
	if got := greeting(""); got != "hello, world" {
		t.Fatalf("greeting(\"\") = %q", got)
	}
	if got := greeting("ship"); got != "hello, ship" {
		t.Fatalf("greeting(\"ship\") = %q", got)
	}
}

func TestHealthz(t *testing.T) {
	record(t)
	rec := httptest.NewRecorder()
	newMux().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "ok" {
		t.Fatalf("/healthz: %d %q", rec.Code, rec.Body.String())
	}
}
