"""The protein track: structure-conditioned sequence design (inverse folding) with REED."""
