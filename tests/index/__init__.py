"""Tests of simx.index and the simx CLI (a package so its module names cannot clash with other test folders)."""
