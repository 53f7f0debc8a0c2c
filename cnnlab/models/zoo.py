"""Imports every model family so that their builders register. Add a family here."""

from . import lenet  # noqa: F401
from . import alexnet  # noqa: F401
from . import vgg  # noqa: F401
from . import googlenet  # noqa: F401
from . import resnet  # noqa: F401
from . import mobilenet  # noqa: F401
