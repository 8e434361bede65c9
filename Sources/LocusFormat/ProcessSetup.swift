import HDF5

/// What a process that writes Locus files sets up before its first HDF5 call.
public enum ProcessSetup {
    /// Keeps libhdf5's exit handler from touching files whose write failed (see
    /// `HDF5Runtime.skipShutdownAtExit`): a full disk must end in an error line, not a crash.
    public static func prepare() {
        HDF5Runtime.skipShutdownAtExit()
    }
}
