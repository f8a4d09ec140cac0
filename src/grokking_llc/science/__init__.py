"""Science: closed forms, GSM, statistics, fits and the paper's claims."""
