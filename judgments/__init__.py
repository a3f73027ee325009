"""Human judgments: crowd tasks out, results in (issue 4)."""
