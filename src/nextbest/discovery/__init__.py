"""Journey discovery: which touchpoint paths customers take and which touchpoints their conversions owe."""
