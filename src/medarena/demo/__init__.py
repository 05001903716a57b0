"""Demo data for `medarena demo`: real anatomy from installed packages, exact synthetic findings."""
