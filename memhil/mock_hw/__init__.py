"""Wire-level emulators of the bench sharing one simulated chip and clock."""
