/// Task arithmetic: the weighted sum of the task vectors, scaled by λ.
struct TaskArithmeticMethod: GeneralizedTaskArithmeticMethod {
    let name = "task_arithmetic"
    let aliases = ["task-arithmetic"]
    let summary = ["θ = θ0 + λ Σ_t w_t τ_t (a negative weight negates a task)"]
    let citation = "Ilharco, Ribeiro, Wortsman, Gururangan, Schmidt, Hajishirzi, Farhadi (2023), Editing Models with Task Arithmetic, ICLR 2023, §2 (task vectors) and §4 (addition)."
    let composition = GTAComposition()
}
