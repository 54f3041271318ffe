"""The auditor stage (answered → audited): writes the decision record; answers are released only from here."""
