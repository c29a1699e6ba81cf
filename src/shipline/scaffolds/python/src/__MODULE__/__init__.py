"""__NAME__: an HTTP service, scaffolded by `shipline init service`."""
