"""Side-by-side benchmarks against HF PEFT (see docs/BENCHMARKS.md); not part of the package."""
