"""Sans-IO translations between wire formats and the neutral chat form."""
