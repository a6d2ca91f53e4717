using OnnxAlign.IO;
using OnnxAlign.Model;
using Xunit.Abstractions;

namespace OnnxAlign.Tests;

/// <summary>
/// Issue #21 (4): tools/bench/torch_loop.py rebuilds the PyTorch UNet from the committed ONNX export's initializers
/// (no checkpoint, no retraining). Its <c>--write-check</c> output, committed in Fixtures/torch_fashion (x, t and the
/// torch network's ε̂ for 4 samples at t = 0, 250, 600, 999), must be what the ONNX model computes here: then the
/// weight mapping is right and the PyTorch timings run the very network OnnxAlign runs.
/// </summary>
public class TorchParityTests(ITestOutputHelper output)
{
    [Fact]
    public void TheTorchUNetBuiltFromTheOnnxWeightsPredictsWhatTheOnnxModelDoes()
    {
        string fixtures = Path.Combine(TestSupport.RepositoryRoot, "tests", "OnnxAlign.Tests", "Fixtures", "torch_fashion");
        var x = NpyFile.Read(Path.Combine(fixtures, "x.npy"));
        var t = NpyFile.Read(Path.Combine(fixtures, "t.npy"));
        var torchEps = NpyFile.Read(Path.Combine(fixtures, "eps.npy"));
        Assert.Equal([4, 1, 32, 32], x.Shape);
        Assert.Equal([4], t.Shape);
        Assert.Equal(x.Shape, torchEps.Shape);

        using var denoiser = DiffusionModel.Locate(Path.Combine(TestSupport.RepositoryRoot, "models", "fashion")).OpenDenoiser();
        int size = denoiser.SampleSize;
        var eps = new float[x.Data.Length];
        for (int i = 0; i < t.Data.Length; i++)
            denoiser.PredictNoise(x.Data.AsSpan(i * size, size), 1, t.Data[i], eps.AsSpan(i * size, size));

        double maxDiff = eps.Zip(torchEps.Data).Max(p => Math.Abs(p.First - p.Second));
        double scale = torchEps.Data.Max(v => Math.Abs(v));
        output.WriteLine($"ONNX Runtime {Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetVersionString()}: max |ε̂_onnx − ε̂_torch| = {maxDiff:g3} (max |ε̂| = {scale:g3})");
        Assert.True(scale > 1, "the fixture's ε̂ is degenerate");
        Assert.True(maxDiff < 1e-4, $"ONNX and torch ε̂ differ by {maxDiff:g3}");
    }
}
