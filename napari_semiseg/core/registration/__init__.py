"""Registration between volumes (pseudo-labels for unannotated volumes) and within a volume."""
