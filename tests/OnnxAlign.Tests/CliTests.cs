using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxAlign.IO;

namespace OnnxAlign.Tests;

/// <summary>The <c>onnxalign</c> command as a user runs it (a separate process).</summary>
public class CliTests
{
    /// <summary>Starts <c>onnxalign ARGS</c> as a separate process with redirected output.</summary>
    internal static Process Start(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = TestSupport.RepositoryRoot };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "OnnxAlign.Cli.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        return Process.Start(start)!;
    }

    /// <summary>Starts <c>onnxalign ARGS</c> and returns once <paramref name="files"/> files match <paramref name="pattern"/> in <paramref name="folder"/> (the run is then in progress).</summary>
    internal static Process StartAndWaitFor(string folder, string pattern, int files, params string[] args)
    {
        var process = Start(args);
        var clock = Stopwatch.StartNew();
        while (!(Directory.Exists(folder) && Directory.GetFiles(folder, pattern).Length >= files) && !process.HasExited && clock.Elapsed.TotalSeconds < 60)
            Thread.Sleep(10);
        Assert.False(process.HasExited, "the run finished before the test could act on it; make it longer");
        return process;
    }

    internal static (int Code, string Out, string Err) Onnxalign(params string[] args)
    {
        using var p = Start(args);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("onnxalign did not finish"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void GenerateGmm2dReportsTheMixtureMoments()
    {
        string outDir = TestSupport.TempDirectory();
        var (code, stdout, stderr) = Onnxalign("generate", TestSupport.Toy("gmm2d"), "--count", "2048", "--steps", "100", "--sampler", "ddim", "--out", outDir, "--overwrite");
        Assert.True(code == 0, stderr);
        Assert.Contains("wrote 2048 samples", stdout);
        var report = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")))!;
        Assert.Equal(2048 * 100, (long)report["network_evaluations"]!);
        Assert.Equal("ddim", (string)report["sampler"]!["name"]!);
        var mean = report["statistics"]!["mean"]!.AsArray().Select(v => (double)v!).ToArray();
        var expected = report["reference"]!["mean"]!.AsArray().Select(v => (double)v!).ToArray();
        var variance = report["statistics"]!["covariance"]!.AsArray().Select(v => (double)v!).ToArray();
        for (int i = 0; i < 2; i++) Assert.True(Math.Abs(mean[i] - expected[i]) <= Moments.Z * Math.Sqrt(variance[i * 3] / 2048));
        Assert.Equal([2048, 2], NpyFile.Read(Path.Combine(outDir, "samples.npy")).Shape);
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp"));
    }

    [Fact]
    public void GenerateImagesWritesPngsAndGrid()
    {
        string outDir = TestSupport.TempDirectory();
        var (code, _, stderr) = Onnxalign("generate", TestSupport.Toy("gmm-image"), "--count", "5", "--steps", "10", "--out", outDir, "--overwrite", "--shard", "1/2");
        Assert.True(code == 0, stderr);
        // Shard 1 of 2 of 5 samples holds indices 2, 3, 4.
        Assert.Equal(["sample_000002.png", "sample_000003.png", "sample_000004.png"], Directory.GetFiles(outDir, "sample_*.png").Select(f => Path.GetFileName(f)!).Order().ToArray());
        Assert.True(File.Exists(Path.Combine(outDir, "grid.png")));
        var back = ImageFiles.ReadImage(Path.Combine(outDir, "sample_000002.png"), [1, 8, 8]);
        var samples = NpyFile.Read(Path.Combine(outDir, "samples.npy"));
        for (int i = 0; i < 64; i++) Assert.True(Math.Abs(Math.Clamp(samples.Data[i], -1, 1) - back[i]) <= 1.01f / 255 * 2);
    }

    [Theory]
    [InlineData("--steps", "0", "--steps 0")]
    [InlineData("--count", "-3", "--count -3")]
    [InlineData("--eta", "NaN", "--eta")]
    [InlineData("--sampler", "heun", "--sampler 'heun'")]
    [InlineData("--shard", "2/2", "--shard '2/2'")]
    [InlineData("--device", "cuda:0", "cuda")]
    [InlineData("--init-noise", "/nonexistent/x.npy", "/nonexistent/x.npy")]
    public void BadInputIsOneLineExitTwoAndNothingWritten(string flag, string value, string mentioned)
    {
        string outDir = Path.Combine(TestSupport.TempDirectory(), "run");
        var (code, _, stderr) = Onnxalign("generate", TestSupport.Toy("gmm2d"), flag, value, "--out", outDir);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", stderr);
        Assert.Contains(mentioned, stderr);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void ARunIsNotOverwrittenWithoutConsent()
    {
        string outDir = TestSupport.TempDirectory();
        Assert.Equal(0, Onnxalign("generate", TestSupport.Toy("gmm2d"), "--count", "4", "--steps", "5", "--out", outDir).Code);
        var (code, _, stderr) = Onnxalign("generate", TestSupport.Toy("gmm2d"), "--count", "4", "--steps", "5", "--out", outDir);
        Assert.Equal(2, code);
        Assert.Contains("--overwrite", stderr);
    }

    [Fact]
    public void InspectPrintsInputsScheduleAndPrediction()
    {
        var (code, stdout, _) = Onnxalign("inspect", TestSupport.Toy("gmm-image"));
        Assert.Equal(0, code);
        Assert.Contains("timestep: Float []", stdout);
        Assert.Contains("VPrediction", stdout);
        Assert.Contains("_diffusers_version", stdout);
        Assert.Contains($"runtime    ONNX Runtime {Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetVersionString()}, providers ", stdout);
    }
}
