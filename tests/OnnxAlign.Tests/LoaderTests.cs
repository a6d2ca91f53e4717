using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

public class LoaderTests
{
    [Fact]
    public void LocatesEveryLayout()
    {
        var legacy = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        Assert.EndsWith(Path.Combine("gmm2d", "model.onnx"), legacy.OnnxPath);
        var diffusers = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        Assert.EndsWith(Path.Combine("unet", "model.onnx"), diffusers.OnnxPath);
        Assert.EndsWith(Path.Combine("scheduler", "scheduler_config.json"), diffusers.ConfigPath);
        Assert.NotNull(diffusers.ModelIndexPath);
        Assert.Equal(PredictionType.VPrediction, diffusers.Config.PredictionType);
        var file = DiffusionModel.Locate(Path.Combine(TestSupport.Toy("gmm-image"), "unet", "model.onnx"));
        Assert.Equal(diffusers.ConfigPath, file.ConfigPath);
        Assert.Equal(diffusers.Directory, file.Directory);
    }

    [Fact]
    public void MissingOrCorruptModelsAreClearErrors()
    {
        string dir = TestSupport.TempDirectory();
        Assert.Contains("no such model", Assert.Throws<ConfigException>(() => DiffusionModel.Locate(Path.Combine(dir, "nope"))).Message);
        Assert.Contains("no network found", Assert.Throws<ConfigException>(() => DiffusionModel.Locate(dir)).Message);
        File.WriteAllText(Path.Combine(dir, "model.onnx"), "this is not protobuf");
        Assert.Contains("no scheduler config", Assert.Throws<ConfigException>(() => DiffusionModel.Locate(dir)).Message);
        File.WriteAllText(Path.Combine(dir, "scheduler_config.json"), "{}");
        var model = DiffusionModel.Locate(dir);
        var e = Assert.Throws<ConfigException>(() => model.OpenDenoiser());
        Assert.Contains("not a usable ONNX model", e.Message);
        Assert.Contains("model.onnx", e.Message);
    }

    [Fact]
    public void CudaWithoutTheGpuRuntimeSaysSoPlainly()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        if (Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider"))
            return; // a GPU build: covered by the device run recorded in README
        var e = Assert.Throws<ConfigException>(() => model.OpenDenoiser(new DenoiserOptions { Device = "cuda:0" }));
        Assert.Contains("no CUDA support", e.Message);
        Assert.Contains("Microsoft.ML.OnnxRuntime.Gpu", e.Message);
        Assert.Throws<ConfigException>(() => model.OpenDenoiser(new DenoiserOptions { Device = "gpu" }));
    }

    [Fact]
    public void NpyRoundTripAndErrors()
    {
        string path = Path.Combine(TestSupport.TempDirectory(), "a.npy");
        var data = Enumerable.Range(0, 24).Select(i => i * 0.5f - 3).ToArray();
        NpyFile.Write(path, data, [2, 3, 4]);
        var back = NpyFile.Read(path);
        Assert.Equal([2, 3, 4], back.Shape);
        Assert.Equal(data, back.Data);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(0, (bytes.Length - 24 * 4) % 64); // header padded to 64 bytes as NumPy requires
        Assert.Throws<ConfigException>(() => NpyFile.Parse(bytes.AsSpan(0, bytes.Length - 1), "cut.npy"));
        Assert.Throws<ConfigException>(() => NpyFile.Parse("not numpy"u8, "text.npy"));
        var oneDim = Path.Combine(TestSupport.TempDirectory(), "v.npy");
        NpyFile.Write(oneDim, [1f, 2f], [2]);
        Assert.Equal([2], NpyFile.Read(oneDim).Shape);
    }
}

/// <summary>
/// The GPU path (issue #8): the same samples on CUDA as on the CPU, where the GPU build and a GPU are present. It
/// skips on the CPU package (no CUDA provider) and, with the GPU package, where the provider cannot start (no GPU or
/// no CUDA libraries, as on a CPU machine); ONNXALIGN_REQUIRE_CUDA=1 (tools/gpu/device_run.sh) makes both a failure.
/// </summary>
public class CudaTests
{
    [SkippableFact]
    public void CudaGenerationMatchesTheCpu()
    {
        bool required = Environment.GetEnvironmentVariable("ONNXALIGN_REQUIRE_CUDA") == "1";
        bool listed = Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider");
        const string build = "build with -p:OnnxRuntimePackage=Microsoft.ML.OnnxRuntime.Gpu.Linux -p:OnnxRuntimeVersion=1.31.0 " +
                             "on a machine with a GPU, CUDA 13 and cuDNN 9 to run this test (tools/gpu)";
        Assert.False(required && !listed, "ONNXALIGN_REQUIRE_CUDA=1 but this ONNX Runtime build has no CUDA execution provider");
        Skip.IfNot(listed, "no CUDA execution provider in this ONNX Runtime build (the CPU package); " + build);
        var model = DiffusionModel.Locate(Path.Combine(TestSupport.RepositoryRoot, "models", "fashion"));
        var ddim = OnnxAlign.Sampling.Sampler.Create("ddim", model.Config, 10);
        var request = new OnnxAlign.Sampling.GenerationRequest { Count = 8, BatchSize = 8, Seed = 2 };
        OnnxDenoiser gpu;
        try { gpu = model.OpenDenoiser(new DenoiserOptions { Device = "cuda:0" }); }
        catch (ConfigException e) when (!required)
        {
            throw new SkipException("the CUDA execution provider is in this build but could not start here (" + e.Message.Split('\n')[0] + "); " + build);
        }
        using (gpu)
        {
            using var cpu = model.OpenDenoiser();
            Assert.Equal("cuda-pinned", gpu.HostMemory); // the per-step copies are DMA transfers from page-locked memory
            var a = OnnxAlign.Sampling.Generation.Run(cpu, ddim, request).Samples;
            var b = OnnxAlign.Sampling.Generation.Run(gpu, ddim, request).Samples;
            Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) < 2e-2, "CUDA and CPU samples differ");
        }
    }
}
