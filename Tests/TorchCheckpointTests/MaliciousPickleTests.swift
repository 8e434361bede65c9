import Foundation
import LocusTestSupport
import XCTest

@testable import TorchCheckpoint

/// Pickles that would run code under `torch.load(weights_only=False)` or `pickle.load`: each is
/// refused, the error names the global, and the file the payload would create never appears.
final class MaliciousPickleTests: XCTestCase {
    func testCodeExecutingPicklesAreRefusedAndNothingRuns() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let canary = directory + "/canary"
        let script = #"""
            import pickle, builtins, subprocess, collections
            import torch
            d, canary = sys.argv[1], sys.argv[2]
            command = "touch " + canary
            class SystemCall:
                def __reduce__(self): return (os.system, (command,))
            class Eval:
                def __reduce__(self): return (builtins.eval, ("__import__('os').system(%r)" % command,))
            class Exec:
                def __reduce__(self): return (builtins.exec, ("import os; os.system(%r)" % command,))
            class Popen:
                def __reduce__(self): return (subprocess.Popen, (["touch", canary],))
            class Custom:
                def __init__(self): self.x = 1
            class Import:
                def __reduce__(self): return (__import__, ("os",))
            payloads = {"system": SystemCall(), "eval": Eval(), "exec": Exec(), "popen": Popen(), "custom": Custom(), "import": Import()}
            import pickletools
            def first_global(data):
                # The global the pickle names first, as written (protocol 2 uses Python 2 names
                # such as __builtin__.eval; protocol 4 pushes two strings for STACK_GLOBAL).
                strings = []
                for op, arg, _ in pickletools.genops(data):
                    if op.name == "GLOBAL": return arg.replace(" ", ".")
                    if op.name == "STACK_GLOBAL": return strings[-2] + "." + strings[-1]
                    if isinstance(arg, str): strings.append(arg)
            globals_written = {}
            for name, payload in payloads.items():
                # torch.save of a state dict that also holds the payload (as a real attack would).
                state = collections.OrderedDict(weight=torch.ones(2, 2), evil=payload)
                torch.save(state, "%s/%s.pt" % (d, name))
                globals_written[name + ".pt"] = first_global(pickle.dumps(payload, protocol=2))
                # the payload alone as data.pkl, protocols 2 and 4 (STACK_GLOBAL), no torch at all
                for protocol in (2, 4):
                    data = pickle.dumps(payload, protocol=protocol)
                    write_checkpoint("%s/%s-p%d.pt" % (d, name, protocol), data)
                    globals_written["%s-p%d.pt" % (name, protocol)] = first_global(data)
            json.dump(globals_written, open(d + "/globals.json", "w"))
            """#
        _ = try runPythonOrFail(script, [directory, canary])
        let globals = try XCTUnwrap(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/globals.json"))) as? [String: String])
        XCTAssertEqual(globals.count, 18)
        XCTAssertEqual(globals["system-p4.pt"], "posix.system")
        XCTAssertEqual(globals["eval-p4.pt"], "builtins.eval")
        XCTAssertEqual(globals["popen-p4.pt"], "subprocess.Popen")
        for (file, global) in globals.sorted(by: { $0.key < $1.key }) {
            let error = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/" + file) }
            guard case .refusedGlobal(_, let member, _, let module, let refusedName) = error else {
                XCTFail("\(file): \(String(describing: error))")
                continue
            }
            XCTAssertEqual(module + "." + refusedName, global, file)
            XCTAssertTrue(member.hasSuffix("/data.pkl"), file)
            assertDescription(error, contains: ["refuses global '\(global)' at pickle offset", "nothing was executed"])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: canary), "a payload ran")
        // The same files do run code under an unrestricted load: the payloads are real.
        let proof = try runPythonOrFail(#"""
            import torch
            try:
                torch.load(sys.argv[1], weights_only=False)
            except Exception as e:
                pass
            print("ran" if os.path.exists(sys.argv[2]) else "did not run")
            """#, [directory + "/system.pt", canary])
        XCTAssertTrue(proof.contains("ran") && !proof.contains("did not run"), proof)
    }

    /// Opcodes that create objects or use the extension registry are refused even without a
    /// global, and tensors rebuilt through anything but the allowed functions are refused.
    func testObjectCreatingOpcodesAndDisallowedRebuildsAreRefused() throws {
        try requireTorch()
        let directory = try makeTemporaryDirectory()
        let script = #"""
            import pickle, copyreg
            import torch
            d = sys.argv[1]
            # NEWOBJ on an allowed class name would still build an object: refused.
            write_checkpoint(d + "/newobj.pt", b"\x80\x02ccollections\nOrderedDict\n)\x81.")
            # EXT1: a global through copyreg's extension registry.
            write_checkpoint(d + "/ext.pt", b"\x80\x02\x82\x01.")
            # INST (protocol 0 object creation).
            write_checkpoint(d + "/inst.pt", b"(ios\nsystem\nS'touch x'\no.")
            # A tensor subclass is rebuilt through torch._tensor._rebuild_from_type_v2: refused by name.
            class Sub(torch.Tensor): pass
            torch.save({"w": torch.ones(2).as_subclass(Sub)}, d + "/subclass.pt")
            """#
        _ = try runPythonOrFail(script, [directory])
        assertDescription(expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/newobj.pt") }, contains: ["0x81", "refused"])
        assertDescription(expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/ext.pt") }, contains: ["0x82", "extension"])
        let inst = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/inst.pt") }
        guard case .pickle(_, _, 1, _) = inst else { return XCTFail("\(String(describing: inst))") }
        let subclass = expectCheckpointError { _ = try TorchCheckpointReader(path: directory + "/subclass.pt") }
        guard case .refusedGlobal(_, _, _, "torch._tensor", "_rebuild_from_type_v2") = subclass else {
            return XCTFail("\(String(describing: subclass))")
        }
    }
}
