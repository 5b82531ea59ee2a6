"""pyvisa backend ``@memhil``: the mock lab's emulators at bench resource names.

pyvisa loads the backend ``NAME`` of ``ResourceManager("...@NAME")`` from the module
``pyvisa_NAME`` (its ``WRAPPER_CLASS``); the implementation is
``memhil.mock_hw.visa.MockLabVisaLibrary`` (docs/mock-lab.md).
"""

from memhil.mock_hw.visa import MockLabVisaLibrary

WRAPPER_CLASS = MockLabVisaLibrary

__all__ = ["WRAPPER_CLASS"]
