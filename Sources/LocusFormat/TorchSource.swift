/// PyTorch checkpoints (`torch.save` zip archives, `pytorch_model.bin` folders).
enum TorchSource {
    static func open(path: String, key: String?, folder: Bool) throws -> any CheckpointSource {
        throw LocusError(file: path, "looks like a PyTorch checkpoint, which this build of Locus cannot read yet; save it with safetensors.torch.save_file instead")
    }
}
