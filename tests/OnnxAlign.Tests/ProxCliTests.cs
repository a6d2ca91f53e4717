using System.Text.Json.Nodes;
using OnnxAlign.IO;
using static OnnxAlign.Tests.CliTests;

namespace OnnxAlign.Tests;

/// <summary><c>onnxalign prox</c> and <c>generate --align w2</c> as a user runs them (issue #4's acceptance).</summary>
public class ProxCliTests
{
    [Fact]
    public void Prox_on_a_folder_of_pngs_with_brightness_is_exactly_x_plus_a_over_lambda_clamped()
    {
        string input = TestSupport.TempDirectory(), output = TestSupport.TempDirectory();
        var random = new Random(3);
        int[] shape = [3, 8, 8];
        for (int n = 0; n < 5; n++)
            ImageFiles.WritePng(Path.Combine(input, $"img{n}.png"), Enumerable.Range(0, 192).Select(_ => (float)(1.8 * random.NextDouble() - 0.9)).ToArray(), shape);
        const double lambda = 0.02;
        var (code, stdout, stderr) = Onnxalign("prox", "--in", input, "--reward", "brightness", "--lambda", "0.02", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("wrote 5 samples", stdout);

        var moved = NpyFile.Read(Path.Combine(output, "samples.npy"));
        Assert.Equal([5, 3, 8, 8], moved.Shape);
        for (int n = 0; n < 5; n++)
        {
            var x = ImageFiles.ReadImage(Path.Combine(input, $"img{n}.png"), shape);
            for (int i = 0; i < x.Length; i++)
                Assert.Equal((float)Math.Clamp(x[i] + (double)(1f / 192) / lambda, -1, 1), moved.Data[n * 192 + i]); // a = 1/d as stored (float)
        }
        var alignment = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["alignment"]!;
        Assert.Equal("linear-closed-form", (string)alignment["algorithm"]!);
        Assert.Equal(5, (int)alignment["box_active_samples"]!);
        Assert.Equal(5, alignment["per_sample"]!.AsArray().Count);
        Assert.True(File.Exists(Path.Combine(output, "sample_000004.png")));
    }

    /// <summary>A non-concave ramp of brightness: the reported objective of each sample equals the brute-force optimum of
    /// the k = 1 problem max_z ramp(z) − (λ/2)(z − z₀)²/‖a‖² within the certified gap.</summary>
    [Fact]
    public void Prox_with_a_ramp_reward_reports_the_brute_force_optimum()
    {
        string dir = TestSupport.TempDirectory(), output = TestSupport.TempDirectory();
        var random = new Random(8);
        const int n = 6, d = 16;
        var x = Enumerable.Range(0, n * d).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        string npy = Path.Combine(dir, "x.npy");
        NpyFile.Write(npy, x, [n, 1, 4, 4]);
        const double lambda = 0.02, lo = 0.0, hi = 0.1;
        var (code, _, stderr) = Onnxalign("prox", "--in", npy, "--reward", "ramp:brightness,0,0.1", "--lambda", "0.02", "--no-clamp", "--out", output);
        Assert.True(code == 0, stderr);
        var perSample = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!["alignment"]!["per_sample"]!.AsArray();
        double normSquared = d * (1.0 / d) * (1.0 / d);
        for (int s = 0; s < n; s++)
        {
            double z0 = x.Skip(s * d).Take(d).Average(v => (double)v), best = double.NegativeInfinity;
            for (int i = 0; i <= 400_000; i++)
            {
                double z = z0 - 2 + 4.0 * i / 400_000;
                best = Math.Max(best, Math.Clamp((z - lo) / (hi - lo), 0, 1) - lambda / 2 * (z - z0) * (z - z0) / normSquared);
            }
            double objective = (double)perSample[s]!["objective"]!, gap = (double)perSample[s]!["certified_gap"]!;
            Assert.True(gap <= 1e-4 * Math.Max(1, Math.Abs(objective)) * 1.0001, $"sample {s}: gap {gap}");
            Assert.True(objective >= best - gap - 1e-7 && objective <= best + 1e-4, $"sample {s}: objective {objective}, brute force {best}");
        }
    }

    [Fact]
    public void Generate_with_w2_alignment_writes_base_and_moved_samples()
    {
        string output = TestSupport.TempDirectory();
        var (code, stdout, stderr) = Onnxalign("generate", TestSupport.Toy("tiny-unet"), "--count", "4", "--steps", "3", "--align", "w2",
            "--reward", "color-target:1,0,0", "--lambda", "0.001", "--out", output, "--overwrite");
        Assert.True(code == 0, stderr);
        Assert.Contains("prox: reward", stdout);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "report.json")))!;
        Assert.Equal("w2-prox", (string)report["alignment"]!["method"]!);
        Assert.Equal("low-rank-newton", (string)report["alignment"]!["algorithm"]!);
        Assert.True((double)report["alignment"]!["reward_after"]!["mean"]! > (double)report["alignment"]!["reward_before"]!["mean"]!);
        Assert.Equal([4, 3, 32, 32], NpyFile.Read(Path.Combine(output, "base.npy")).Shape);
        Assert.All(NpyFile.Read(Path.Combine(output, "samples.npy")).Data, v => Assert.InRange(v, -1f, 1f));
    }

    [Theory]
    [InlineData("--lambda", "0", "--lambda 0")]
    [InlineData("--lambda", "nan", "--lambda 'nan'")]
    [InlineData("--reward", "bogus", "unknown reward")]
    [InlineData("--reward", "lowrank:missing.npy:ramp:0,1", "missing.npy")]
    [InlineData("--cost-weights", "zeros", "weights must be finite and > 0")]
    public void Prox_rejects_bad_input_with_one_line_and_writes_nothing(string flag, string value, string expected)
    {
        string dir = TestSupport.TempDirectory(), output = Path.Combine(TestSupport.TempDirectory(), "out");
        string npy = Path.Combine(dir, "x.npy");
        NpyFile.Write(npy, new float[32], [2, 1, 4, 4]);
        NpyFile.Write(Path.Combine(dir, "zeros.npy"), new float[16], [1, 4, 4]);
        var args = new Dictionary<string, string> { ["--reward"] = "brightness", ["--lambda"] = "1", ["--in"] = npy, ["--out"] = output };
        args[flag] = value == "zeros" ? Path.Combine(dir, "zeros.npy") : value;
        var (code, _, stderr) = Onnxalign(["prox", .. args.SelectMany(kv => new[] { kv.Key, kv.Value })]);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(output));
    }
}
