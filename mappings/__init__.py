"""Pure transforms: HL7 v2 parsing/building, domain mappings, code tables. No sockets."""
