using System.Reflection;
using System.Runtime.Loader;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using OnnxAlign.Alignment;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>
/// README's C# blocks, compiled as they stand (Roslyn) and run on the toy image model, so that they cannot drift
/// from the code: the model path and the reward are the only substitutions (the toy has no classifier).
/// </summary>
public class ReadmeExampleTests
{
    private static readonly string[] Blocks = Regex.Matches(
            File.ReadAllText(Path.Combine(TestSupport.RepositoryRoot, "README.md")), @"```csharp\n(.*?)```", RegexOptions.Singleline)
        .Select(m => m.Groups[1].Value).ToArray();

    private static string Toy => TestSupport.Toy("gmm-image");

    /// <summary>Compiles a block as the body of <c>Snippet.Run(parameters)</c>, its <c>using</c> lines above the class.</summary>
    private static MethodInfo Compile(string block, string parameters = "", string returns = "void", string epilogue = "")
    {
        var lines = block.Split('\n');
        var usings = lines.Where(l => l.StartsWith("using ") && l.TrimEnd().EndsWith(';') && !l.Contains('=') && !l.StartsWith("using var")).ToArray();
        string body = string.Join('\n', lines.Except(usings));
        // The implicit usings of `dotnet new console`, as a reader's app has them.
        string[] implicitUsings = ["using System;", "using System.IO;", "using System.Linq;", "using System.Collections.Generic;", "using System.Threading;", "using System.Threading.Tasks;"];
        string source = string.Join('\n', implicitUsings.Concat(usings).Concat(["using OnnxAlign.Model;", "using OnnxAlign.Sampling;"]).Distinct()) +
                        $"\npublic static class Snippet {{ public static {returns} Run({parameters}) {{\n{body}\n{epilogue}\n}} }}\n";
        var references = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Concat(AppDomain.CurrentDomain.GetAssemblies().Where(a => !a.IsDynamic && a.Location.Length > 0).Select(a => a.Location))
            .Distinct().Select(p => MetadataReference.CreateFromFile(p));
        var compilation = CSharpCompilation.Create($"Readme{Guid.NewGuid():N}", [CSharpSyntaxTree.ParseText(source)], references,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));
        using var image = new MemoryStream();
        var emitted = compilation.Emit(image);
        var errors = emitted.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToArray();
        Assert.True(emitted.Success, "README block does not compile:\n" + string.Join("\n", errors.Select(e => e.ToString())) + "\n" + source);
        image.Position = 0;
        var assembly = AssemblyLoadContext.Default.LoadFromStream(image);
        return assembly.GetType("Snippet")!.GetMethod("Run")!;
    }

    [Fact]
    public void ReadmeHasTheBlocksTheseTestsRun()
    {
        Assert.Equal(4, Blocks.Length);   // a new block needs its test here
        Assert.Contains("KlAlignment.Run", Blocks[0]);
        Assert.Contains("sampler.Step(", Blocks[1]);
        Assert.Contains("TwistedSmcParticles", Blocks[2]);
        Assert.Contains("ClassifierFreeGuidance", Blocks[3]);
    }

    [Fact]
    public void LibraryExampleRuns()
    {
        string block = Blocks[0].Replace("\"models/fashion\"", $"@\"{Toy}\"").Replace("\"class:Trouser\"", "\"brightness\"");
        var output = new StringWriter();
        var console = Console.Out;
        Console.SetOut(output);
        try { Compile(block).Invoke(null, null); }
        finally { Console.SetOut(console); }
        string printed = output.ToString();
        Assert.Matches(@"ESS \d+, KL -?\d", printed);
        Assert.Contains("ExactTilt: 64 samples", printed);
        Assert.Matches(@"μ = -?\d[\d.]*, met: (True|False), 64 samples", printed);   // ConstrainedAlignment.Run
    }

    /// <summary>The own-loop block, with the variables its comment names, equals the fast tilt through the sampler.</summary>
    [Fact]
    public void OwnLoopExampleEqualsTheFastTiltThroughTheSampler()
    {
        var run = Compile(Blocks[1], "DiffusionModel model, IDenoiser network, Sampler sampler, float[] x, int batch, float[] theta, NoiseStream[] streams");
        var model = DiffusionModel.Locate(Toy);
        using var network = model.OpenDenoiser();
        var sampler = Sampler.Create("ddpm", model.Config, steps: 30);
        var theta = RewardSpec.ParseLinear("brightness", network.SampleShape, model.Directory).Tilt(0.05);
        const int batch = 4;
        var streams = Enumerable.Range(0, batch).Select(i => new NoiseStream(3, i)).ToArray();
        var x = new float[batch * network.SampleSize];
        for (int b = 0; b < batch; b++) streams[b].NextGaussian(x.AsSpan(b * network.SampleSize, network.SampleSize));

        run.Invoke(null, [model, network, sampler, x, batch, theta, streams]);

        var expected = Generation.Run(ExactTilt.FastTilt(network, theta, model.DataRange), sampler,
                                      new GenerationRequest { Count = batch, BatchSize = batch, Seed = 3 }).Samples;
        TestSupport.AssertClose(expected, x, 1e-4);
    }

    /// <summary>
    /// The exact tilt's own loop, as written, gives <see cref="ExactTilt.Sample"/>'s systems (same seed, layout and number
    /// of systems): the caller's GuideNoise + projection is the library's projected tilt up to float rounding.
    /// </summary>
    [Fact]
    public void ExactTiltOwnLoopExampleGivesExactTiltsSystems()
    {
        var run = Compile(Blocks[2], "DiffusionModel model, IDenoiser network, Sampler sampler, float[] theta",
                          returns: "List<OnnxAlign.Alignment.SmcSystem>", epilogue: "return systems;");
        var model = DiffusionModel.Locate(Toy);
        using var network = model.OpenDenoiser();
        var sampler = Sampler.Create("ddpm", model.Config, steps: 30);
        var theta = RewardSpec.ParseLinear("brightness", network.SampleShape, model.Directory).Tilt(0.05);
        var output = new StringWriter();
        var console = Console.Out;
        Console.SetOut(output);
        List<SmcSystem> systems;
        try { systems = (List<SmcSystem>)run.Invoke(null, [model, network, sampler, theta])!; }
        finally { Console.SetOut(console); }
        Assert.Matches(@"ESS \d+ of 128, log Z -?\d", output.ToString());

        var library = ExactTilt.Sample(network, model.DataRange, sampler, theta,
            new ExactTiltSettings { Count = 64, Systems = 4, Smc = new SmcSettings { ParticlesPerSystem = 32, Seed = 7 } });
        Assert.Equal(4, library.Systems.Count);
        Assert.True(library.Systems.Sum(s => s.Resamplings) > 0, "the tilt should be strong enough to resample");
        for (int b = 0; b < 4; b++)
        {
            Assert.Equal(library.Systems[b].Resamplings, systems[b].Resamplings);
            TestSupport.AssertClose(library.Systems[b].Samples, systems[b].Samples, 1e-4);
            Assert.Equal(library.Systems[b].LogNormalizer, systems[b].LogNormalizer, 1e-3);
            for (int i = 0; i < 32; i++) Assert.Equal(library.Systems[b].LogWeights[i], systems[b].LogWeights[i], 1e-3);
        }
    }

    /// <summary>The Stable-Diffusion-shaped loop, as written (on the toy of that shape), equals generate's own loop and decoding.</summary>
    [Fact]
    public void StableDiffusionLoopExampleEqualsTheLibrarysGeneration()
    {
        string block = Blocks[3].Replace("\"models/toy/tiny-sd\"", $"@\"{TestSupport.Toy("tiny-sd")}\"")
            .Replace("Console.WriteLine(", "_ = (");
        var run = Compile(block, returns: "float[]", epilogue: "return images;");
        var images = (float[])run.Invoke(null, null)!;

        var model = DiffusionModel.Locate(TestSupport.Toy("tiny-sd"));
        using var opened = OnnxAlign.Guidance.ConditionedModel.Open(model, new OnnxAlign.Guidance.ConditioningOptions { Prompt = "a red square", NegativePrompt = "blurry", GuidanceScale = 5 });
        var latents = Generation.Run(opened.Denoiser, Sampler.Create("ddim", model.Config, steps: 20), new GenerationRequest { Count = 2, BatchSize = 2, Seed = 7 }).Samples;
        TestSupport.AssertClose(opened.Decode(latents, 2), images, 1e-4);
    }
}
