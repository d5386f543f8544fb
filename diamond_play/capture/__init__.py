"""Desktop capture: any window, region or monitor plus the keyboard and mouse -> a dataset (`capture.py`)."""
