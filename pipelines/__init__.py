"""Flink and Beam jobs, each a module with a build function and a small main()."""
