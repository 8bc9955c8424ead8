"""The laptop side: pins (`inv lock`), the preflight checks (checks/), the app's tests and
their database, build, smoke and push of the image, `[secrets]` commands, `inv init` and
`inv deploy`."""
