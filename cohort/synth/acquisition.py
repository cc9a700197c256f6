"""Acquisition protocols: scanner, kernel, slice thickness, pixel spacing, tilt, noise,
and how the CT numbers are stored (signedness, bits, padding, transfer syntax)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter

# (manufacturer, models, soft kernels, bone kernels, stored as signed?, BitsStored, padding)
SCANNERS = (
    ("GE MEDICAL SYSTEMS", ("Revolution CT", "LightSpeed VCT", "Discovery CT750 HD"),
     ("STANDARD", "SOFT"), ("BONE", "BONEPLUS"), True, 16, -2000),
    ("SIEMENS", ("SOMATOM Definition AS+", "SOMATOM go.Top", "SOMATOM Force"),
     ("H31s", "J40s", "Hr40"), ("H70h", "J70h"), False, 12, None),
    ("Philips", ("Ingenuity CT", "iCT 256", "Brilliance 64"),
     ("UB", "UC", "EC"), ("YC", "D"), False, 12, None),
    ("TOSHIBA", ("Aquilion ONE", "Aquilion Prime"),
     ("FC21", "FC26"), ("FC30", "FC81"), True, 16, None),
)
THICKNESSES_MM = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
#: (posterior fossa, cerebrum) slice thicknesses of sequential (stepped) head protocols
STEPPED_BLOCKS_MM = ((2.5, 5.0), (3.0, 7.0), (4.0, 7.0), (4.0, 8.0), (5.0, 10.0))

#: transfer syntaxes the generator writes, by short name
TRANSFER_SYNTAXES = ("explicit", "implicit", "deflate", "rle", "jpeg-ls", "jpeg2000")


@dataclass(frozen=True)
class Protocol:
    manufacturer: str
    model: str
    kernel: str
    bone_kernel: bool
    slice_thickness_mm: float
    pixel_spacing_mm: float
    matrix: int
    tilt_deg: float
    noise_sd_hu: float
    signed: bool
    bits_stored: int
    padding_value: int | None  # stored value outside the reconstruction circle
    rescale_intercept: float
    transfer_syntax: str
    kvp: float
    exposure_mas: float
    #: a stepped (sequential, two-block) protocol: the upper block's thickness (the lower
    #: block has slice_thickness_mm), and where between the carotid canal and the clinoids
    #: (0..1 of a range around them) the blocks meet. None: one regular (helical) stack.
    upper_thickness_mm: float | None = None
    block_split: float | None = None

    @property
    def fov_mm(self) -> float:
        return self.pixel_spacing_mm * self.matrix

    @property
    def stepped(self) -> bool:
        return self.upper_thickness_mm is not None


def noise_sd(kernel_is_bone: bool, thickness_mm: float, base: float, *,
             exposure_mas: float = 300.0, kvp: float = 120.0) -> float:
    """Quantum noise falls with the square root of slice thickness and of dose (mAs), and
    with tube voltage (about kVp^-1.5 at equal mAs); bone kernels are noisier."""
    dose = np.sqrt(300.0 / exposure_mas) * (120.0 / kvp) ** 1.5
    return base * np.sqrt(5.0 / thickness_mm) * dose * (4.0 if kernel_is_bone else 1.0)


def sample_protocol(rng: np.random.Generator, *, matrix: int, thickness_choices, spacing_range,
                    tilt_p: float, transfer_syntax: str, stepped_p: float = 0.0) -> Protocol:
    """Draw the protocol of a primary (soft-tissue kernel) axial head series."""
    man, models, soft, _, signed, bits, pad = SCANNERS[int(rng.integers(len(SCANNERS)))]
    thickness = float(thickness_choices[int(rng.integers(len(thickness_choices)))])
    # PixelSpacing in the 0.4-0.5 mm range at 512 x 512; smaller test grids keep the FOV.
    spacing = float(rng.uniform(*spacing_range)) * 512 / matrix
    tilt = 0.0
    if rng.random() < tilt_p:
        tilt = float(rng.choice([-1, 1]) * rng.uniform(8.0, 25.0))
    ts = transfer_syntax
    if ts == "mixed":
        ts = TRANSFER_SYNTAXES[int(rng.integers(len(TRANSFER_SYNTAXES)))]
    kvp = float(rng.choice([100.0, 120.0, 120.0, 140.0]))
    mas = float(rng.uniform(200, 400))
    upper = split = None
    if stepped_p > 0 and rng.random() < stepped_p:  # no draw at all otherwise: same cohorts
        thickness, upper = STEPPED_BLOCKS_MM[int(rng.integers(len(STEPPED_BLOCKS_MM)))]
        split = float(rng.uniform(0.0, 1.0))
    return Protocol(
        manufacturer=man, model=str(rng.choice(models)), kernel=str(rng.choice(soft)),
        bone_kernel=False, slice_thickness_mm=thickness, pixel_spacing_mm=round(spacing, 5),
        matrix=matrix, tilt_deg=round(tilt, 2),
        noise_sd_hu=float(noise_sd(False, thickness, rng.uniform(2.5, 4.5), exposure_mas=mas,
                                   kvp=kvp)),
        signed=signed, bits_stored=bits, padding_value=pad,
        rescale_intercept=-1024.0, transfer_syntax=ts,
        kvp=kvp, exposure_mas=mas,
        upper_thickness_mm=upper, block_split=split,
    )


def bone_variant(p: Protocol, rng: np.random.Generator) -> Protocol:
    """The same acquisition reconstructed with a bone kernel."""
    bones = next(s[3] for s in SCANNERS if s[0] == p.manufacturer)
    return replace(p, kernel=str(rng.choice(bones)), bone_kernel=True,
                    noise_sd_hu=p.noise_sd_hu * 4.0)


def thick_variant(p: Protocol, thickness_mm: float) -> Protocol:
    """A thicker reconstruction of the same acquisition."""
    return replace(p, slice_thickness_mm=thickness_mm,
                    noise_sd_hu=p.noise_sd_hu * float(np.sqrt(p.slice_thickness_mm / thickness_mm)))


def add_kernel_and_noise(hu: np.ndarray, p: Protocol, rng: np.random.Generator) -> np.ndarray:
    """Apply the reconstruction kernel's sharpness and its noise texture, in place."""
    if p.bone_kernel:  # edge enhancement of a sharp kernel
        blurred = gaussian_filter(hu, sigma=(0, 1.2, 1.2))
        hu += 0.9 * (hu - blurred)
    nk, nj, ni = hu.shape
    pad = 32
    bank = rng.standard_normal((4, nj + pad, ni + pad), dtype=np.float32)
    if not p.bone_kernel:  # soft kernels: correlated, blotchy noise
        bank = gaussian_filter(bank, sigma=(0, 1.4, 1.4))
        bank /= bank.std()
    bank *= np.float32(p.noise_sd_hu)
    offsets = rng.integers(0, pad, size=(nk, 2))
    for k in range(nk):
        oy, ox = offsets[k]
        hu[k] += bank[k % 4, oy:oy + nj, ox:ox + ni]
    return hu
