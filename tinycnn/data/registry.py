"""Metadata of the MedMNIST v2 2D datasets (28x28 files), transcribed from MedMNIST's `medmnist/info.py`.

Source: github.com/MedMNIST/MedMNIST, `medmnist/info.py` of release 2.1.0 (Zenodo record 6496656) and of
release 3.0.2 (Zenodo record 10519652). The two releases ship byte-identical 28 px files for every 2D set
except OrganA/C/SMNIST, whose files (and split sizes) changed in v3; for those three both official
versions are listed and either is accepted. Downloads use the current record (v3), whose MD5 is the
first entry of `releases`.

Task names are MedMNIST's: "multi-class", "binary-class", "multi-label, binary-class" (ChestMNIST, labels
(N, 14)) and "ordinal-regression" (RetinaMNIST, 5 grades; evaluated as multi-class).
"""
from __future__ import annotations

from dataclasses import dataclass, field

V2_RECORD = "https://zenodo.org/record/6496656/files/{name}.npz?download=1"
V3_RECORD = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"

TASKS = ("multi-class", "binary-class", "multi-label, binary-class", "ordinal-regression")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Release:
    """One official version of a `<name>.npz` file: where it is published, its MD5 and its split sizes."""
    version: str
    url: str
    md5: str
    n_samples: dict


@dataclass(frozen=True)
class MedMNISTInfo:
    """Static metadata of one MedMNIST 2D dataset (28x28)."""
    name: str
    task: str
    class_names: tuple
    n_channels: int
    releases: tuple = field(repr=False)
    license: str = "CC BY 4.0"
    description: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.npz"

    @property
    def n_classes(self) -> int:
        """Number of classes (multi-class/binary/ordinal) or of labels (multi-label)."""
        return len(self.class_names)

    @property
    def url(self) -> str:
        return self.releases[0].url

    @property
    def md5(self) -> str:
        return self.releases[0].md5

    @property
    def n_samples(self) -> dict:
        return dict(self.releases[0].n_samples)

    @property
    def md5s(self) -> tuple:
        return tuple(r.md5 for r in self.releases)

    def release_for_md5(self, md5: str):
        for r in self.releases:
            if r.md5 == md5:
                return r
        return None


def _same_file(name, md5, train, val, test):
    """A file that is byte-identical in v2 and v3: one MD5, published in both records."""
    n = {"train": train, "val": val, "test": test}
    return (Release("3", V3_RECORD.format(name=name), md5, n), Release("2", V2_RECORD.format(name=name), md5, n))


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen")

_ENTRIES = [
    MedMNISTInfo(
        "pathmnist", "multi-class",
        ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
         "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
        3, _same_file("pathmnist", "a8b06965200029087d5bd730944a56c1", 89996, 10004, 7180),
        description="Colon pathology (NCT-CRC-HE-100K / CRC-VAL-HE-7K), 9 tissue types."),
    MedMNISTInfo(
        "chestmnist", "multi-label, binary-class",
        ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
         "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
        1, _same_file("chestmnist", "02c8a6516a18b556561a56cbdd36c4a8", 78468, 11219, 22433),
        description="Chest X-ray (NIH-ChestXray14), 14 disease labels (multi-label)."),
    MedMNISTInfo(
        "dermamnist", "multi-class",
        ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
         "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"),
        3, _same_file("dermamnist", "0744692d530f8e62ec473284d019b0c7", 7007, 1003, 2005),
        license="CC BY 4.0 (v2) / CC BY-NC 4.0 (v3)",
        description="Dermatoscopy (HAM10000), 7 diseases."),
    MedMNISTInfo(
        "octmnist", "multi-class",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        1, _same_file("octmnist", "c68d92d5b585d8d81f7112f81e2d0842", 97477, 10832, 1000),
        description="Retinal OCT, 4 diagnoses."),
    MedMNISTInfo(
        "pneumoniamnist", "binary-class", ("normal", "pneumonia"),
        1, _same_file("pneumoniamnist", "28209eda62fecd6e6a2d98b1501bb15f", 4708, 524, 624),
        description="Paediatric chest X-ray, pneumonia vs normal."),
    MedMNISTInfo(
        "retinamnist", "ordinal-regression", ("0", "1", "2", "3", "4"),
        3, _same_file("retinamnist", "bd4c0672f1bba3e3a89f0e4e876791e4", 1080, 120, 400),
        description="Fundus camera (DeepDRiD), 5-level diabetic retinopathy grade."),
    MedMNISTInfo(
        "breastmnist", "binary-class", ("malignant", "normal, benign"),
        1, _same_file("breastmnist", "750601b1f35ba3300ea97c75c52ff8f6", 546, 78, 156),
        description="Breast ultrasound, malignant vs normal+benign."),
    MedMNISTInfo(
        "bloodmnist", "multi-class",
        ("basophil", "eosinophil", "erythroblast",
         "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
         "neutrophil", "platelet"),
        3, _same_file("bloodmnist", "7053d0359d879ad8a5505303e11de1dc", 11959, 1712, 3421),
        description="Blood cell microscopy, 8 cell types."),
    MedMNISTInfo(
        "tissuemnist", "multi-class",
        ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
         "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
         "Thick Ascending Limb"),
        1, _same_file("tissuemnist", "ebe78ee8b05294063de985d821c1c34b", 165466, 23640, 47280),
        description="Kidney cortex microscopy (BBBC051), 8 cell types."),
    MedMNISTInfo(
        "organamnist", "multi-class", _ORGANS, 1,
        (Release("3", V3_RECORD.format(name="organamnist"), "68e3f8846a6bd62f0c9bf841c0d9eacc",
                 {"train": 34561, "val": 6491, "test": 17778}),
         Release("2", V2_RECORD.format(name="organamnist"), "866b832ed4eeba67bfb9edee1d5544e6",
                 {"train": 34581, "val": 6491, "test": 17778})),
        description="Abdominal CT, axial view, 11 organs."),
    MedMNISTInfo(
        "organcmnist", "multi-class", _ORGANS, 1,
        (Release("3", V3_RECORD.format(name="organcmnist"), "b9ceb9546e10131b32923c5bbeaea2b1",
                 {"train": 12975, "val": 2392, "test": 8216}),
         Release("2", V2_RECORD.format(name="organcmnist"), "0afa5834fb105f7705a7d93372119a21",
                 {"train": 13000, "val": 2392, "test": 8268})),
        description="Abdominal CT, coronal view, 11 organs."),
    MedMNISTInfo(
        "organsmnist", "multi-class", _ORGANS, 1,
        (Release("3", V3_RECORD.format(name="organsmnist"), "9ab87b696fb54e2a387ebe992d6ed5f1",
                 {"train": 13932, "val": 2452, "test": 8827}),
         Release("2", V2_RECORD.format(name="organsmnist"), "e5c39f1af030238290b9557d9503af9d",
                 {"train": 13940, "val": 2452, "test": 8829})),
        description="Abdominal CT, sagittal view, 11 organs."),
]

MEDMNIST: dict = {e.name: e for e in _ENTRIES}


def names() -> list:
    """Names of the known MedMNIST 2D datasets, in MedMNIST's order."""
    return list(MEDMNIST)


def get_info(name: str) -> MedMNISTInfo:
    """Metadata of MedMNIST dataset `name` (case-insensitive); ValueError listing the known names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key.endswith(".npz"):
        key = key[:-4]
    if key not in MEDMNIST:
        raise ValueError(f"unknown MedMNIST dataset {name!r}: expected one of {', '.join(MEDMNIST)}")
    return MEDMNIST[key]
