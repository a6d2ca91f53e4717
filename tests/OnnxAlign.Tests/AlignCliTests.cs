using System.Text.Json.Nodes;
using OnnxAlign.IO;
using static OnnxAlign.Tests.CliTests;

namespace OnnxAlign.Tests;

/// <summary><c>onnxalign align</c> as a user runs it (issue #7).</summary>
public class AlignCliTests
{
    private static string Directions()
    {
        string dir = TestSupport.TempDirectory();
        NpyFile.Write(Path.Combine(dir, "e0.npy"), [1f, 0f], [2]);
        NpyFile.Write(Path.Combine(dir, "e1.npy"), [0f, 1f], [2]);
        return dir;
    }

    [Fact]
    public void ConstraintsAreMetOnAFreshBatchAndTheTraceIsReported()
    {
        string dir = Directions(), output = Path.Combine(dir, "run");
        var (code, stdout, stderr) = Onnxalign("align", TestSupport.Toy("gmm2d"), "--constraint", $"direction:{dir}/e0.npy>=1",
            "--constraint", $"direction:{dir}/e1.npy<=mean-0.5std", "--samples-per-iteration", "1000", "--steps", "50", "--sampler", "ddim",
            "--count", "2000", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("converged", stdout);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        var constraints = report["constrained"]!["constraints"]!.AsArray();
        Assert.All(constraints, c => Assert.True((bool)c!["met"]!));
        Assert.True(report["constrained"]!["trace"]!.AsArray().Count >= 2);
        Assert.True(File.Exists(Path.Combine(output, "dual_trace.png")));
        // The written samples are a fresh draw of q_μ*: their mean meets the first constraint within 3 standard errors.
        var samples = NpyFile.Read(Path.Combine(output, "samples.npy"));
        var x0 = Enumerable.Range(0, samples.Rows).Select(i => (double)samples.Data[2 * i]).ToArray();
        double mean = x0.Average(), se = Math.Sqrt(x0.Sum(v => (v - mean) * (v - mean)) / (x0.Length - 1) / x0.Length);
        Assert.True(mean > 1 - 3 * se, $"mean {mean} se {se}");
    }

    [Fact]
    public void InfeasibleConstraintsNameTheOneThatCannotBeMet()
    {
        string dir = Directions(), output = Path.Combine(dir, "run");
        var (code, _, stderr) = Onnxalign("align", TestSupport.Toy("gmm2d"), "--constraint", $"direction:{dir}/e0.npy>=1",
            "--constraint", $"direction:{dir}/e0.npy<=0", "--samples-per-iteration", "300", "--steps", "20", "--out", output);
        Assert.Equal(4, code);
        Assert.Contains("cannot be met", stderr);
        Assert.Contains("e0.npy", stderr);
        Assert.Equal("infeasible", (string)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["status"]!);
        Assert.False(File.Exists(Path.Combine(output, "samples.npy")));
    }

    [Fact]
    public void PreferencePairsGiveATiltTowardThePreferredSide()
    {
        string dir = TestSupport.TempDirectory(), output = Path.Combine(dir, "run");
        var random = new Random(4);
        // Preferred samples have the larger x0 (a noiseless preference along e0).
        var a = Enumerable.Range(0, 800).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        var b = Enumerable.Range(0, 800).Select(_ => (float)(random.NextDouble() * 4 - 2)).ToArray();
        var (w, l) = (new float[800], new float[800]);
        for (int i = 0; i < 400; i++)
        {
            bool aWins = a[2 * i] > b[2 * i];
            Array.Copy(aWins ? a : b, 2 * i, w, 2 * i, 2);
            Array.Copy(aWins ? b : a, 2 * i, l, 2 * i, 2);
        }
        Directory.CreateDirectory(Path.Combine(dir, "prefs", "preferred"));
        Directory.CreateDirectory(Path.Combine(dir, "prefs", "rejected"));
        NpyFile.Write(Path.Combine(dir, "prefs", "preferred", "samples.npy"), w, [400, 2]);
        NpyFile.Write(Path.Combine(dir, "prefs", "rejected", "samples.npy"), l, [400, 2]);
        var (code, stdout, stderr) = Onnxalign("align", TestSupport.Toy("gmm2d"), "--preferences", Path.Combine(dir, "prefs"), "--l2", "0.1",
                                               "--count", "500", "--steps", "50", "--sampler", "ddim", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("held-out", stdout);
        var theta = NpyFile.Read(Path.Combine(output, "theta.npy")).Data;
        Assert.True(theta[0] > 5 * Math.Abs(theta[1]), $"θ = ({theta[0]}, {theta[1]})");
        Assert.True((double)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["preferences"]!["held_out_accuracy"]! > 0.9);
    }
}

/// <summary>A preference folder the library cannot read is refused with the flag, before anything is written.</summary>
public class PreferenceFolderCliTests
{
    [Fact]
    public void AFolderWithoutPairsOrLabelsIsRefusedAndNothingIsWritten()
    {
        string dir = TestSupport.TempDirectory(), output = Path.Combine(dir, "never");
        Directory.CreateDirectory(Path.Combine(dir, "prefs", "preferred"));
        var (code, _, stderr) = Onnxalign("align", TestSupport.Toy("gmm2d"), "--preferences", Path.Combine(dir, "prefs"), "--out", output);
        Assert.Equal(2, code);
        Assert.Contains("--preferences", stderr);
        Assert.Contains("expected subfolders preferred/ and rejected/", stderr);
        Assert.False(Directory.Exists(output));
    }
}

/// <summary><c>align --objective</c>: dual averaging from the command line.</summary>
public class ObjectiveCliTests
{
    [Fact]
    public void AMomentTargetIsApproachedAndTheTraceIsWritten()
    {
        string dir = TestSupport.TempDirectory(), output = Path.Combine(dir, "run");
        NpyFile.Write(Path.Combine(dir, "e0.npy"), [1f, 0f], [2]);
        NpyFile.Write(Path.Combine(dir, "e1.npy"), [0f, 1f], [2]);
        var (code, stdout, stderr) = Onnxalign("align", TestSupport.Toy("gmm2d"), "--objective", $"sq-dist:1.5,1.5(direction:{dir}/e0.npy|direction:{dir}/e1.npy)",
            "--beta", "0.2", "--samples-per-iteration", "500", "--steps", "50", "--sampler", "ddpm", "--count", "1000", "--out", output);
        Assert.True(code == 0, stderr);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        var trace = report["objective"]!["trace"]!.AsArray();
        Assert.True((double)trace[^1]!["objective"]! < (double)trace[0]!["objective"]!);
        Assert.True(File.Exists(Path.Combine(output, "dual_trace.png")));
        // With a small β the moments approach the target: both means move from the base (−0.3, −0.2) past 1.
        var samples = NpyFile.Read(Path.Combine(output, "samples.npy"));
        for (int j = 0; j < 2; j++) Assert.True(Enumerable.Range(0, samples.Rows).Average(i => samples.Data[2 * i + j]) > 1, $"mean {j}");
        Assert.Contains("iterate", stdout);
    }

    [Theory]
    [InlineData("neg-sq-dist:0,0(brightness|brightness)", "not convex")]
    [InlineData("brightness", "expected a function of features")]
    public void NonConvexOrLinearObjectivesAreRefused(string spec, string why)
    {
        string output = Path.Combine(TestSupport.TempDirectory(), "never");
        var (code, _, stderr) = Onnxalign("align", TestSupport.Toy("gmm2d"), "--objective", spec, "--out", output);
        Assert.Equal(2, code);
        Assert.Contains(why, stderr);
        Assert.False(Directory.Exists(output));
    }
}
