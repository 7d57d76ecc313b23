"""HTTP routes, one router per resource: system, datasets, runs, explore (points/stats/neighbours/compare)."""
