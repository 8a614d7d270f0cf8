"""Radiology reporting: the reading worklist, reports and their versions, templates,
critical results, the referring physician portal and turnaround metrics."""
