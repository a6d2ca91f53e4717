using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Sampling;
using static OnnxAlign.Tests.CliTests;

namespace OnnxAlign.Tests;

/// <summary>Issue #16: the one job runner of every command that writes an output folder.</summary>
public class OutputJobTests
{
    private static RunPlan Plan(params (string Name, string? Value)[] settings) =>
        RunPlan.For("test", DiffusionModel.Locate(TestSupport.Toy("gmm2d")), settings.ToDictionary(s => s.Name, s => s.Value));

    [Fact]
    public void AFolderWithAnInterruptedRunIsRefusedUnlessResumedWithTheSameSettings()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        using (var first = OutputJob.Open(output, new OutputJobSettings(), Plan(("count", "8"), ("seed", "1"))))
        {
            Assert.False(first.Resumed);
            first.Checkpoint!.Remember("dual.json", () => new[] { 1f, float.NaN }, out bool recalled);
            Assert.False(recalled);
        }   // interrupted: disposed without Finish

        // Without resume or overwrite: refused, naming the folder and the two remedies.
        var refused = Assert.Throws<ConfigException>(() => OutputJob.Open(output, new OutputJobSettings(), Plan(("count", "8"), ("seed", "1"))));
        Assert.Equal("outputDirectory", refused.Parameter);
        Assert.Contains("holds an interrupted run", refused.Message);
        Assert.Contains("option 'resume'", refused.Message);
        // A resume with other settings: refused.
        var other = Assert.Throws<ConfigException>(() => OutputJob.Open(output, new OutputJobSettings { Resume = true }, Plan(("count", "8"), ("seed", "2"))));
        Assert.Equal("resume", other.Parameter);
        Assert.Contains("other settings", other.Message);

        // The same settings in another order: the same run plan; the remembered result comes back exactly (NaN too).
        using var resumed = OutputJob.Open(output, new OutputJobSettings { Resume = true }, Plan(("seed", "1"), ("count", "8")));
        Assert.True(resumed.Resumed);
        var note = resumed.Checkpoint!.Remember<float[]>("dual.json", () => throw new InvalidOperationException("solved again"), out bool back);
        Assert.True(back);
        Assert.Equal(1f, note[0]);
        Assert.True(float.IsNaN(note[1]));
    }

    /// <summary>
    /// A run refused as bad input while running (a ConfigException from its work) removes the folder it created — but
    /// only while it has saved no work: finished batches stay for --resume (a shutdown race once deleted them).
    /// </summary>
    [Fact]
    public void ARefusedRunRemovesTheFolderItCreatedOnlyWhileItHoldsNoWork()
    {
        foreach (bool saved in new[] { false, true })
        {
            string output = Path.Combine(TestSupport.TempDirectory(), "run");
            using (var job = OutputJob.Open(output, new OutputJobSettings(), Plan(("count", "8"))))
                Assert.Throws<ConfigException>(() => job.Run<int>(() =>
                {
                    if (saved) job.Checkpoint!.Save(0, new float[8], [4, 2]);
                    throw new ConfigException("refused while running");
                }, fault => throw new InvalidOperationException("no NaN here")));
            Assert.Equal(saved, Directory.Exists(output));
            if (saved) Assert.True(File.Exists(Path.Combine(BatchCheckpoint.PathOf(output), "batch_000000000.npy")));
        }
    }

    [Fact]
    public void AResumeOfAFolderWithoutAnInterruptedRunWritesNothing()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var e = Assert.Throws<ConfigException>(() => OutputJob.Open(output, new OutputJobSettings { Resume = true }, Plan(("count", "8"))));
        Assert.Equal("resume", e.Parameter);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void FinishWritesTheFilesAndOneReportAndStopKeepsTheFinishedWork()
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "sample_000009.png"), "an earlier run's");
        using (var job = OutputJob.Open(output, new OutputJobSettings { Overwrite = true }, Plan(("count", "2"))))
        {
            var report = new JobReport { Command = "test", NetworkEvaluations = 7, Blocks = new JsonObject { ["seed"] = 3 } };
            var written = job.Finish(new JobOutput(report, () => SampleSetWriter.Write(output, new float[4], 2, 0, [2])));
            Assert.Equal(["samples.npy"], written["files"]!.AsArray().Select(f => (string)f!));
        }
        Assert.False(File.Exists(Path.Combine(output, "sample_000009.png")));
        Assert.False(BatchCheckpoint.Exists(output));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        // The common fields of every command's report, then the command's blocks.
        foreach (string field in new[] { "command", "version", "model", "run", "status", "error", "network_evaluations", "time_seconds", "files", "seed" })
            Assert.True(json.AsObject().ContainsKey(field), field);
        Assert.Equal("finished", (string)json["status"]!);
        Assert.True((double)json["time_seconds"]!["total"]! >= 0);

        // A NaN sample: the finished work and a stopped report, and the exception goes on (the CLI maps it to exit 3).
        using (var job = OutputJob.Open(output, new OutputJobSettings { Overwrite = true }, Plan(("count", "4"))))
        {
            var finished = new GenerationResult([1f, 2f], 0, 1, 5, TimeSpan.Zero, TimeSpan.Zero);
            Assert.Throws<NonFiniteException>(() => job.Run<int>(() => throw new NonFiniteException(3, 1, finished),
                fault => new JobOutput(new JobReport { Command = "test" }, () => SampleSetWriter.Write(output, fault.Finished.Samples, fault.Finished.Count, 0, [2]))));
        }
        json = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        Assert.Equal("stopped", (string)json["status"]!);
        Assert.Equal(3, (int)json["error"]!["step"]!);
        Assert.Equal(1, (int)json["error"]!["sample"]!);
        Assert.Equal([1, 2], NpyFile.Read(Path.Combine(output, "samples.npy")).Shape);
    }

    [Fact]
    public void ABlockMayNotReuseACommonField() =>
        Assert.Throws<ArgumentException>(() => new JobReport { Command = "test", Blocks = new JsonObject { ["files"] = 1 } }.ToJson());
}

/// <summary>Issue #16: align and sweep stop on a NaN/±∞ sample as generate does — the finished work, a stopped report, exit 3.</summary>
public class NanStopCliTests
{
    /// <summary>A model folder whose network returns NaN for every input (a broken export), with <paramref name="scheduler"/>'s config.</summary>
    internal static string NanModel(long[] shape, string scheduler)
    {
        string dir = TestSupport.TempDirectory();
        var g = new OnnxAlign.ModelForge.OnnxGraph("nan");
        string sample = g.Input("sample", OnnxAlign.ModelForge.OnnxType.Float, [-1, .. shape]);
        g.Input("timestep", OnnxAlign.ModelForge.OnnxType.Float, -1);
        g.Output("out_sample", OnnxAlign.ModelForge.OnnxType.Float, [-1, .. shape]);
        g.Node("Mul", [sample, g.Scalar(float.NaN)], output: "out_sample");
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), g.ToModel());
        File.Copy(scheduler, Path.Combine(dir, "scheduler_config.json"));
        return dir;
    }

    private static void AssertStopped(string output, int code, string stderr)
    {
        Assert.True(code == 3, stderr);
        Assert.Contains("non-finite value", stderr);
        Assert.Single(stderr.Trim().Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        Assert.Equal("stopped", (string)report["status"]!);
        Assert.Equal("non-finite", (string)report["error"]!["kind"]!);
        Assert.Equal(report["files"]!.AsArray().Select(f => (string)f!).Append("report.json").Order(),
                     Directory.GetFiles(output).Select(Path.GetFileName).Where(f => f != ".lock").Order());
    }

    [Fact]
    public void AlignOnANaNModelWritesAStoppedReportAndExitsThree()
    {
        string model = NanModel([2], Path.Combine(TestSupport.Toy("tiny-unet"), "scheduler_config.json"));
        NpyFile.Write(Path.Combine(model, "e0.npy"), [1f, 0f], [2]);
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = Onnxalign("align", model, "--constraint", $"direction:{model}/e0.npy>=1", "--samples-per-iteration", "64", "--steps", "5",
                                          "--count", "16", "--out", output);
        AssertStopped(output, code, stderr);
        Assert.Equal("align", (string)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["command"]!);
    }

    [Fact]
    public void AlignWhoseFinalTiltTurnsNaNKeepsThetaAndTheFitsBlock()
    {
        // Preferences are fitted without sampling, so the first sample drawn is the final tilt's: the fit is finished work.
        string model = NanModel([2], Path.Combine(TestSupport.Toy("tiny-unet"), "scheduler_config.json"));
        var random = new Random(5);
        float[] Draw() => Enumerable.Range(0, 80).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        var (preferred, rejected) = (Draw(), Draw());
        for (int i = 0; i < 40; i++)
            if (preferred[2 * i] < rejected[2 * i]) (preferred[2 * i], rejected[2 * i]) = (rejected[2 * i], preferred[2 * i]);
        foreach (var (side, data) in new[] { ("preferred", preferred), ("rejected", rejected) })
        {
            Directory.CreateDirectory(Path.Combine(model, "prefs", side));
            NpyFile.Write(Path.Combine(model, "prefs", side, "samples.npy"), data, [40, 2]);
        }
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = Onnxalign("align", model, "--preferences", Path.Combine(model, "prefs"), "--count", "8", "--steps", "5", "--out", output);
        AssertStopped(output, code, stderr);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        Assert.NotNull(report["preferences"]);
        Assert.Contains("theta.npy", report["files"]!.AsArray().Select(f => (string)f!));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void SweepOnANaNModelWritesAStoppedReportAndExitsThree()
    {
        string fashion = Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");
        string model = NanModel([1, 32, 32], Path.Combine(fashion, "scheduler", "scheduler_config.json"));
        Directory.CreateDirectory(Path.Combine(model, "classifier"));
        foreach (var file in Directory.GetFiles(Path.Combine(fashion, "classifier"))) File.Copy(file, Path.Combine(model, "classifier", Path.GetFileName(file)));
        string output = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = Onnxalign("sweep", model, "--reward", "class:Trouser", "--lambdas", "1", "--count", "4", "--steps", "3",
                                          "--evaluator", Path.Combine(fashion, "evaluator"), "--out", output);
        AssertStopped(output, code, stderr);
    }
}

/// <summary>Issue #16: align and sweep resume like generate — the finished work is kept, and the resumed files equal an uninterrupted run's.</summary>
[Trait("Category", "Slow")]
public class AlignSweepResumeTests
{
    private static void AssertSameFiles(string whole, string resumed)
    {
        var expected = Directory.GetFiles(whole).Select(Path.GetFileName).Where(f => f != "report.json").Order().ToArray();
        Assert.Equal(expected, Directory.GetFiles(resumed).Select(Path.GetFileName).Where(f => f != "report.json").Order().ToArray());
        foreach (var file in expected)
            Assert.True(File.ReadAllBytes(Path.Combine(whole, file!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(resumed, file!))), $"{file} differs");
        Assert.False(Directory.Exists(Path.Combine(resumed, BatchCheckpoint.Folder)));
    }

    private static void Kill(System.Diagnostics.Process process)
    {
        process.Kill(entireProcessTree: true);
        process.WaitForExit();
    }

    [Fact]
    public void AlignKilledAfterItsDualResumesWithoutSolvingItAgain()
    {
        string root = TestSupport.TempDirectory(), whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        NpyFile.Write(Path.Combine(root, "e0.npy"), [1f, 0f], [2]);
        string[] args = ["align", TestSupport.Toy("gmm2d"), "--constraint", $"direction:{root}/e0.npy>=1", "--samples-per-iteration", "300", "--steps", "30",
                         "--sampler", "ddim", "--count", "6000", "--batch", "64", "--threads", "1"];
        var (code, stdout, stderr) = Onnxalign([.. args, "--out", whole]);
        Assert.True(code == 0, stderr);
        Assert.Contains("iterate 1:", stdout);

        // Killed once the dual's solution is kept: the final tilt is under way.
        using (var process = StartAndWaitFor(Path.Combine(resumed, BatchCheckpoint.Folder), "dual.json", 1, [.. args, "--out", resumed])) Kill(process);
        Assert.False(File.Exists(Path.Combine(resumed, "report.json")));
        (code, _, stderr) = Onnxalign([.. args, "--out", resumed]);
        Assert.Equal(2, code);
        Assert.Contains("--resume", stderr);
        (code, _, stderr) = Onnxalign([.. args, "--seed", "5", "--out", resumed, "--resume"]);
        Assert.Equal(2, code);
        Assert.Contains("other settings", stderr);

        (code, stdout, stderr) = Onnxalign([.. args, "--out", resumed, "--resume"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("not solved again", stdout);
        Assert.DoesNotContain("iterate 1:", stdout);
        AssertSameFiles(whole, resumed);
        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(whole, "report.json")))!;
        var b = JsonNode.Parse(File.ReadAllText(Path.Combine(resumed, "report.json")))!;
        Assert.Equal(a["constrained"]!.ToJsonString(), b["constrained"]!.ToJsonString());
        Assert.Equal(a["run"]!.ToJsonString(), b["run"]!.ToJsonString());
    }

    [Fact]
    public void SweepResumedRedoesOnlyTheMissingPoints()
    {
        string root = TestSupport.TempDirectory(), whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        string fashion = Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");
        string[] args = ["sweep", fashion, "--reward", "class:Trouser", "--lambdas", "1,0.1", "--count", "8", "--steps", "8",
                         "--exact-particles-per-sample", "2", "--threads", "1"];
        var (code, stdout, stderr) = Onnxalign([.. args, "--out", whole]);
        Assert.True(code == 0, stderr);
        Assert.DoesNotContain("kept from the interrupted run", stdout);

        string partial = Path.Combine(resumed, BatchCheckpoint.Folder);
        using (var process = StartAndWaitFor(partial, "point_*.json", 2, [.. args, "--out", resumed])) Kill(process);
        int kept = Directory.GetFiles(partial, "point_*.json").Length;
        Assert.InRange(kept, 2, 7);  // of 2 λ × 4 methods

        (code, stdout, stderr) = Onnxalign([.. args, "--out", resumed, "--resume"]);
        Assert.True(code == 0, stderr);
        // Every point the interrupted run finished is taken as it was; only the others are run.
        Assert.Equal(kept, stdout.Split('\n').Count(l => l.Contains("kept from the interrupted run", StringComparison.Ordinal)));
        AssertSameFiles(whole, resumed);
    }
}
