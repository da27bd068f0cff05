from pages.common import placeholder

placeholder("SSIM vs Lp", 6, "It will show, on your own frames, why SSIM barely moves under small "
            "rotations, zooms and shifts while ℓ1/ℓ2 distances jump (DeepSAVA, Fig. 1).")
