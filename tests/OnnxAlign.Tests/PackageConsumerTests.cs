using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace OnnxAlign.Tests;

/// <summary>
/// Issue #16's package target: <c>dotnet pack</c> gives a package that a net8.0 console app restores from a folder
/// feed beside ONNX Runtime's CPU native package, runs README's library example with, and cancels a long run with
/// within one network call. The app rolls forward onto the installed runtime, so the package's net8.0 build is what runs.
/// </summary>
[Trait("Category", "Slow")]
public sealed class PackageConsumerTests(ITestOutputHelper output)
{
    private (int Code, string Out) Dotnet(string workingDirectory, params string[] arguments)
    {
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        string all = stdout + stderr.Result;
        output.WriteLine($"dotnet {string.Join(' ', arguments)} → {process.ExitCode}");
        return (process.ExitCode, all);
    }

    [Fact]
    public void ANet8AppConsumesThePackedPackage()
    {
        string root = TestSupport.TempDirectory(), feed = Path.Combine(root, "feed"), app = Path.Combine(root, "app");
        Directory.CreateDirectory(app);
        // A version of its own, so that NuGet's global cache never serves an older build of the same version.
        string version = $"0.0.0-consumer.{DateTime.UtcNow:yyyyMMddHHmmss}";
        var (code, text) = Dotnet(TestSupport.RepositoryRoot, "pack", "src/OnnxAlign/OnnxAlign.csproj", "-c", "Release", "-o", feed, $"-p:PackageVersion={version}");
        Assert.True(code == 0, text);
        string package = Path.Combine(feed, $"OnnxAlign.{version}.nupkg");
        Assert.True(File.Exists(package), text);
        using (var zip = System.IO.Compression.ZipFile.OpenRead(package))
        {
            var entries = zip.Entries.Select(e => e.FullName).ToArray();
            Assert.Contains("lib/net8.0/OnnxAlign.dll", entries);
            Assert.Contains("lib/net10.0/OnnxAlign.dll", entries);
            Assert.Contains("README.md", entries);
            string nuspec = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec")).Open()).ReadToEnd();
            Assert.Contains("Microsoft.ML.OnnxRuntime.Managed", nuspec);
            Assert.DoesNotMatch(@"id=""Microsoft\.ML\.OnnxRuntime""", nuspec);   // the native package is the application's choice
            Assert.Contains("<license type=\"expression\">MIT</license>", nuspec);
            // The repository from the clone (Source Link): its commit always, its URL where the clone has an 'origin'.
            Assert.Matches(@"<repository type=""git""[^>]* commit=""[0-9a-f]{40}""", nuspec);
        }

        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration><packageSources><add key="onnxalign" value="{feed}" /></packageSources></configuration>
            """);
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net8.0</TargetFramework>
                <RollForward>Major</RollForward>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="OnnxAlign" Version="{version}" />
                <PackageReference Include="Microsoft.ML.OnnxRuntime" Version="1.31.1" />
              </ItemGroup>
            </Project>
            """);
        // README's library example as it stands (the toy model and a reward it has), then a long run cancelled mid-way.
        string readme = File.ReadAllText(Path.Combine(TestSupport.RepositoryRoot, "README.md"));
        string example = Regex.Match(readme, @"## Library example.*?```csharp\n(.*?)```", RegexOptions.Singleline).Groups[1].Value
            .Replace("\"models/fashion\"", $"@\"{TestSupport.Toy("gmm-image")}\"").Replace("\"class:Trouser\"", "\"brightness\"");
        Assert.Contains("KlAlignment.Run", example);   // the block was found
        File.WriteAllText(Path.Combine(app, "Program.cs"), example + $$"""

            // Cancel a long run (10 000 samples of the UNet toy) from its progress after its first step.
            var unet = DiffusionModel.Locate(@"{{TestSupport.Toy("tiny-unet")}}");
            using var unetNetwork = unet.OpenDenoiser();
            using var cancel = new CancellationTokenSource();
            long evaluationsAtCancel = -1;
            var counting = new Counting(unetNetwork);
            try
            {
                Generation.Run(counting, Sampler.Create("ddim", unet.Config, steps: 50),
                    new GenerationRequest { Count = 10_000, BatchSize = 100, Cancellation = cancel.Token },
                    progress: p => { if (evaluationsAtCancel < 0) { evaluationsAtCancel = counting.Calls; cancel.Cancel(); } });
                Console.WriteLine("not cancelled");
            }
            catch (OperationCanceledException)
            {
                Console.WriteLine($"cancelled: {counting.Calls - evaluationsAtCancel} network calls after the cancel");
            }

            sealed class Counting(IDenoiser inner) : IDenoiser
            {
                public long Calls;
                public IReadOnlyList<int> SampleShape => inner.SampleShape;
                public int SampleSize => inner.SampleSize;
                public NoiseSchedule Schedule => inner.Schedule;
                public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
                {
                    inner.PredictNoise(x, batchSize, timestep, noise);
                    Calls++;
                }
            }
            """);

        (code, text) = Dotnet(app, "run", "-c", "Release");
        output.WriteLine(text);
        Assert.True(code == 0, text);
        Assert.Matches(@"ESS \d+, KL -?\d", text);
        Assert.Contains("ExactTilt: 64 samples", text);
        Assert.Contains("cancelled: 0 network calls after the cancel", text);
    }
}
