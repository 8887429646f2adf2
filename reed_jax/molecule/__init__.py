"""Molecule track: unconditional 3D molecule generation by flow matching with REED (METHOD.md section 4)."""
