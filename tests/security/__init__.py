"""Security tests: SSRF, authentication on every route, secrets in logs, console XSS/CSRF."""
