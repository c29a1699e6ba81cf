"""`shipline serve`: webhooks in, runs out, and the API and dashboard that show them."""
