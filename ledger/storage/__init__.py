"""All SQL and Redis access. Raw, parameterised SQL; transactions are explicit."""
