"""The exceptions a user can cause. Their message is one clear sentence for the user."""

import errno
import re
import traceback
from pathlib import Path


def extra_hint(extra: str) -> str:
    """How to add the optional extra ``extra``: in Vitrine's checkout, and elsewhere (a wheel
    installed) by its packages, as this install's metadata lists them. Not ``pip install
    'vitrine[…]'``: the PyPI project named ``vitrine`` is another one, which that could put
    in Vitrine's place (helper-180)."""
    import shlex
    from importlib import metadata

    hint = f"in Vitrine's checkout: pip install -e '.[{extra}]'"
    try:
        wanted = [req.split(";")[0].strip() for req in metadata.requires("vitrine") or ()
                  if re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", req)]
    except (metadata.PackageNotFoundError, OSError, ValueError):  # (run from the source)
        return hint
    return f"{hint}; elsewhere: pip install {shlex.join(wanted)}" if wanted else hint


class VitrineError(Exception):
    """Base class: an error caused by input or configuration, reported without a traceback."""


class ImageError(VitrineError):
    """A file that cannot be used as a product photo; ``reason`` omits the file name."""

    def __init__(self, source: str, reason: str, errno: int | None = None, *,
                 kind: str = "format"):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.errno = errno
        """The OSError's errno when the file could not be read (EMFILE: the server's limit)."""
        self.kind = kind
        """What the web page tells a shopper: 'format' (not a photo it takes), 'damaged' (a
        photo that cannot be decoded whole), 'pixels' (too many to decode), 'side' (a side
        longer than :data:`vitrine.image_checks.MAX_PHOTO_SIDE`), 'small' (a photo searched for
        with a side under :data:`vitrine.images.MIN_QUERY_SIDE`) or 'empty' (0 bytes: on a
        phone, often a photo kept in the cloud and not yet downloaded)."""


class WeightsError(VitrineError):
    """Backbone weights that cannot be found, downloaded or loaded."""


class WeightsMismatch(WeightsError):
    """Weights whose tensors do not fit the backbone's network: ``detail`` says which."""

    def __init__(self, name: str, detail: str):
        self.name, self.detail = name, detail
        super().__init__(f"the weights do not fit {name} ({detail}).")

    def of_file(self, weights: object) -> WeightsError:
        """Said of the weights file the settings name (index and train alike: helper-230)."""
        return WeightsError(f"the weights file {weights} (--weights, or VITRINE_WEIGHTS) is "
                            f"not for the backbone {self.name} (VITRINE_BACKBONE): "
                            f"{self.detail}.")


class StoreError(VitrineError):
    """A store that is missing, corrupt or built with a different model."""


class NoStore(StoreError):
    """No store at the location named (yet): ``vitrine index`` makes one there."""


class StoreBusy(StoreError):
    """Another write holds the store (`vitrine index`, another upload): over in a moment."""


class ServerBusy(VitrineError):
    """More requests of one kind at once than the server takes (photo searches): the others
    are refused at once, to try again in a moment, and pages keep their threads."""


class CatalogError(VitrineError):
    """A catalogue folder or CSV that cannot be read."""


class TrainingError(VitrineError):
    """A training run that cannot give a usable model (its loss diverged)."""


RESOURCE_REFUSED = re.compile(r"can't allocate memory|Cannot allocate memory|out of memory|"
                              r"can't start new thread|failed to map segment", re.IGNORECASE)
"""What torch (its CPU allocator, CUDA), Python and the dynamic loader say when the system
refuses memory or a thread: under `ulimit -v`, a container's limit, a GPU too small for the
batch."""


def resources_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the system refusing memory or a thread (not the input's fault, nor
    necessarily a bug: the command or the request may work with more, or later)."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOMEM) or (
        isinstance(exc, RuntimeError | ImportError)  # (a library's import under `ulimit -v`:
        and RESOURCE_REFUSED.search(str(exc)) is not None  # torch's libtorch_cpu.so; not the
        and "static TLS" not in str(exc))  # loader's TLS block, a library-order problem)


def refused_sentence(exc: BaseException, batch: str = "VITRINE_BATCH_SIZE") -> str | None:
    """One sentence for ``exc`` if it is the system refusing memory or a thread, naming
    where (a size computed wrong shows as a huge request at a line to look at) and
    ``batch``, the setting that sizes what the command holds at once (`train` reads
    VITRINE_TRAIN_BATCH_SIZE, not VITRINE_BATCH_SIZE: it named the one it does not read)."""
    if not resources_refused(exc):
        return None
    lines = str(exc).strip().splitlines()
    where = traceback.extract_tb(exc.__traceback__)[-1:]
    said = (lines[-1] if lines else type(exc).__name__) + "".join(
        f" at {Path(f.filename).name}:{f.lineno}" for f in where)
    if isinstance(exc, ImportError):  # (a smaller batch changes nothing there)
        return (f"the system refused the memory to load a library ({said}); give the "
                "process more (ulimit -v, the container's memory limit).")
    if "CUDA" in str(exc):
        return (f"the GPU ran out of memory ({said}); lower {batch}, or run on "
                "a GPU with more memory.")
    return (f"the system refused memory or a thread ({said}); lower {batch} or "
            "VITRINE_DECODE_WORKERS, or give the process more (ulimit -v, ulimit -u, the "
            "container's memory limit).")
