package main

// A JUnit XML report of this package's tests (junit.xml beside them), so the
// pipeline shows how many passed and which failed. Each test calls record(t).

import (
	"encoding/xml"
	"os"
	"sync"
	"testing"
	"time"
)

type junitCase struct {
	Name      string    `xml:"name,attr"`
	Classname string    `xml:"classname,attr"`
	Time      float64   `xml:"time,attr"`
	Failure   *struct{} `xml:"failure,omitempty"`
	Skipped   *struct{} `xml:"skipped,omitempty"`
}

type junitSuite struct {
	XMLName  xml.Name    `xml:"testsuite"`
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Cases    []junitCase `xml:"testcase"`
}

var (
	junitMu    sync.Mutex
	junitCases []junitCase
)

func record(t *testing.T) {
	start := time.Now()
	t.Cleanup(func() {
		c := junitCase{Name: t.Name(), Classname: "__NAME__", Time: time.Since(start).Seconds()}
		if t.Failed() {
			c.Failure = &struct{}{}
		} else if t.Skipped() {
			c.Skipped = &struct{}{}
		}
		junitMu.Lock()
		junitCases = append(junitCases, c)
		junitMu.Unlock()
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	suite := junitSuite{Name: "__NAME__", Cases: junitCases, Tests: len(junitCases)}
	for _, c := range junitCases {
		if c.Failure != nil {
			suite.Failures++
		}
		if c.Skipped != nil {
			suite.Skipped++
		}
	}
	if out, err := xml.MarshalIndent(suite, "", "  "); err == nil {
		_ = os.WriteFile("junit.xml", append([]byte(xml.Header), out...), 0o644)
	}
	os.Exit(code)
}
