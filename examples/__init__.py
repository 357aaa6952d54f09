"""Example profiles, one folder each with its publisher.toml (shipped as package data
`publisher.examples`: `push` refuses their identity values in another newsletter's config)."""
