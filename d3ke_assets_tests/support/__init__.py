"""Test-only harness: finding server programs, checking what a server listens on, a REST helper,
and headless Chromium. Nothing in d3ke_assets imports this package."""
