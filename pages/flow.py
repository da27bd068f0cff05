from pages.common import placeholder

placeholder("Optical flow", 3, "It will show the optical flow of the selected clip (magnitude, "
            "direction colour wheel, arrows), compare Farneback, TV-L1, ILK and Horn–Schunck side "
            "by side with their end-point error against the synthetic ground truth, and export "
            "the flow as .npy.")
