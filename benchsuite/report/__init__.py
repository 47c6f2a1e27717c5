"""Reports over the results database: the paper's claims, evaluated from stored results."""
