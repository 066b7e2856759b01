"""Issue 7: bad input, faults and determinism (a package so its modules do not shadow tests/)."""
