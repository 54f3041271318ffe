"""Export Switchyard as one portable, hash-signed bundle; import it elsewhere; prove the two behave the same."""
