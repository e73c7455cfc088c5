"""HL7 v2: lenient reading, strict writing."""
