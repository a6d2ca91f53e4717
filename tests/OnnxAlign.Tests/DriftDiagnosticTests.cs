using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>The drift diagnostic of DESIGN §1d: flat for an exact tilt on the exact toy, flagged for a deliberately wrong shift.</summary>
public class DriftDiagnosticTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private DriftReport Drift(string samplerName, int steps, Func<double, double, double>? wrongShift)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var theta = TiltTests.LargeTheta.Select(v => (float)v).ToArray();
        var tilt = wrongShift is null ? new LinearTilt(denoiser, theta) : new LinearTilt(denoiser, theta, TiltMode.Exact, null, wrongShift);
        var sampler = Sampler.Create(samplerName, model.Config, steps);
        var diagnostic = new DriftDiagnostic(DriftDiagnostic.DefaultDirections(theta), sampler);
        Generation.Run(tilt, sampler, new GenerationRequest { Count = 2000, BatchSize = 500, Seed = 4 }, observer: diagnostic);
        return diagnostic.Report();
    }

    [Theory]
    [InlineData("ddim", 100)]
    [InlineData("ddpm", 250)]
    [InlineData("dpm++2m", 50)]
    public void StaysFlatForTheExactTiltOnTheExactToy(string samplerName, int steps)
    {
        var report = Drift(samplerName, steps, null);
        Assert.Equal(2000, report.Samples);
        Assert.False(report.IsDrifting, string.Join("; ", report.Directions.Select(d => $"{d.Name}: z {d.MaxAbsZ:F1}, relative {d.MaxRelativeDrift:F3} at step {d.WorstStep}")));
    }

    [Fact]
    public void FlagsADeliberatelyWrongShift()
    {
        // σ² instead of σ²/α (the shift the exactness tests reject): x̂0 moves as the run goes on.
        var report = Drift("ddim", 100, (alpha, sigma) => sigma * sigma);
        Assert.True(report.IsDrifting, string.Join("; ", report.Directions.Select(d => $"{d.Name}: z {d.MaxAbsZ:F1}, relative {d.MaxRelativeDrift:F3}")));
        var theta = report.Directions.First(d => d.Name == "theta");
        Assert.True(theta.IsDrifting);
    }
}
