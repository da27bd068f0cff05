from pages.common import placeholder

placeholder("Maximum safe radius on optical flow", 4, "It will compute converging upper and lower "
            "bounds of the smallest flow perturbation that changes the model's decision (Wu & "
            "Kwiatkowska, CVPR 2020), live: an upper bound from gradient search with a real "
            "adversarial witness and a lower bound from admissible A*.")
