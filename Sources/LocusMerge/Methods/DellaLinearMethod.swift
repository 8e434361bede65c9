/// DELLA-linear: magnitude-ranked random drop (MagPrune), then the weighted sum.
extension GTAMethod { static let dellaLinear = GTAMethod("della_linear", GTAComposition(magPrune: true),
    summary: "DELLA's drop (--density, --epsilon, --rescale, --seed: see della) on each τ_t, then θ = θ0 + λ Σ_t w_t τ̃_t (no sign election); a mergekit config runs mergekit's della_linear (its drop and L1 rescale: see della)",
    citation: "Deep, Bhardwaj, Poria (2024), DELLA-Merging, arXiv:2406.11617, §3: the Drop step (MagPrune) before a sum, as mergekit's della_linear.") }
