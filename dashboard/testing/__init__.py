"""Helpers shared by tests and benchmarks: tiny seeded timm models and cards, small real data
directories, the real-browser harness (streamlit run + Playwright + Debian chromium) and its flows.
Never imported by the product."""
