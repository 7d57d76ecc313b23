"""Image sets: import (folders, zips, browser uploads, built-ins, benchmarks), validation, splits, sampling.

`from models.data import ...` is the public surface; the modules below each do one job:
errors (DatasetError, SkippedFile), safety (untrusted names, zips and image bytes), imageset (the on-disk set),
writer (atomic building), importers (class-per-folder sources), builtin, benchmarks, splits.
"""
from models.data.benchmarks import BENCHMARKS, import_benchmark
from models.data.builtin import BUILTIN_DATASETS, export_zip, import_builtin, synthetic_images
from models.data.errors import DatasetError, SkippedFile
from models.data.imageset import ImageSet, ImportReport, fit_square
from models.data.importers import FileProgress, check_files, check_zip, import_files, import_folder, import_zip
from models.data.safety import ALLOWED_FORMATS, UploadLimits
from models.data.splits import MPerClassSampler, check_trainable, zero_shot_split

__all__ = [
    "ALLOWED_FORMATS", "BENCHMARKS", "BUILTIN_DATASETS", "DatasetError", "FileProgress", "ImageSet", "ImportReport",
    "MPerClassSampler", "SkippedFile", "UploadLimits", "check_files", "check_trainable", "check_zip", "export_zip",
    "fit_square",
    "import_benchmark", "import_builtin", "import_files", "import_folder", "import_zip", "synthetic_images",
    "zero_shot_split",
]
