"""Files in and out, knowing nothing of plans: readers of every format, directories written as one unit, the manifest."""
