from pages.common import placeholder

placeholder("Attack explorer", 5, "It will run sparse video attacks — Inkawhich et al.'s one-shot, "
            "iterative-saliency and saliency-RG attacks, and DeepSAVA's spatial + additive key-frame "
            "attack with Bayesian-optimised frame selection — and show which frames were hit, how "
            "much, and why.")
