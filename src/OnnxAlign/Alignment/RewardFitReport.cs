using System.Text.Json.Serialization;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;
using static System.Text.Json.Serialization.JsonIgnoreCondition;

namespace OnnxAlign.Alignment;

/// <summary>
/// The samples a reward fit was made on, as <c>fit.json</c>'s <c>source</c> holds it: either samples the caller gave
/// (<see cref="GivenSamples"/>: <c>samples</c>, <c>count</c>) or base samples of the model (<see cref="BaseSamples"/>:
/// <c>base_samples</c>, <c>sampler</c>, <c>steps</c>, <c>seed</c>, <c>network_evaluations</c>); the other kind's fields are left out.
/// </summary>
/// <param name="Samples">The given samples' file or folder.</param>
/// <param name="Count">How many were given.</param>
/// <param name="BaseSamples">How many base samples were drawn.</param>
/// <param name="Sampler">Their sampler.</param>
/// <param name="Steps">Its steps.</param>
/// <param name="Seed">Their seed (sample i uses noise stream seed + i).</param>
/// <param name="NetworkEvaluations">What drawing them cost.</param>
public sealed record RewardFitSource(
    [property: JsonIgnore(Condition = WhenWritingNull)] string? Samples,
    [property: JsonIgnore(Condition = WhenWritingNull)] int? Count,
    [property: JsonIgnore(Condition = WhenWritingNull)] int? BaseSamples,
    [property: JsonIgnore(Condition = WhenWritingNull)] string? Sampler,
    [property: JsonIgnore(Condition = WhenWritingNull)] int? Steps,
    [property: JsonIgnore(Condition = WhenWritingNull)] long? Seed,
    [property: JsonIgnore(Condition = WhenWritingNull)] long? NetworkEvaluations)
{
    /// <summary>Samples the caller gave: <paramref name="count"/> of them, from <paramref name="samples"/>.</summary>
    public static RewardFitSource GivenSamples(string samples, int count) => new(samples, count, null, null, null, null, null);

    /// <summary><paramref name="count"/> base samples of <paramref name="sampler"/> from <paramref name="seed"/>, which cost <paramref name="networkEvaluations"/>.</summary>
    public static RewardFitSource Generated(int count, Sampler sampler, long seed, long networkEvaluations)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        return new(null, null, count, sampler.Name, sampler.Steps, seed, networkEvaluations);
    }
}

/// <summary>
/// A reward fit's figures (<see cref="RewardFit"/>): <c>fit.json</c> in the fitted classifier's folder and report.json's
/// <c>fit</c> block of <c>onnxalign fit-reward</c>, serialised by <see cref="IO.ReportJson"/>. An R² or correlation that
/// is not defined (constant targets) is null.
/// </summary>
/// <param name="Reward">The network reward fitted.</param>
/// <param name="Form"><c>linear</c> or <c>log-prob</c> (<see cref="RewardFit.Name"/>).</param>
/// <param name="UseAs">The reward spec that reads the fit from its folder.</param>
/// <param name="Rows">Rows of W (1, or one per class).</param>
/// <param name="Source">The samples the fit was made on.</param>
/// <param name="Ridge">The ridge weight, relative to the mean pixel variance.</param>
/// <param name="TrainSamples">Samples the regression saw.</param>
/// <param name="HeldOutSamples">Samples held out.</param>
/// <param name="HeldOutRSquared">R² on the held-out samples.</param>
/// <param name="HeldOutCorrelation">Pearson correlation on the held-out samples.</param>
/// <param name="HeldOutArgmaxAgreement">The log-prob form's class agreement on the held-out samples; null for the linear form.</param>
/// <param name="TrainRSquared">R² on the training samples.</param>
public sealed record RewardFitReport(string Reward, string Form, string UseAs, int Rows, RewardFitSource Source, double Ridge, int TrainSamples,
                                     int HeldOutSamples, double? HeldOutRSquared, double? HeldOutCorrelation, double? HeldOutArgmaxAgreement,
                                     double? TrainRSquared)
{
    /// <summary>The report's file in the fitted classifier's folder.</summary>
    public const string FileName = "fit.json";

    /// <summary>The report of <paramref name="fit"/> of <paramref name="reward"/> in the form <paramref name="form"/>, to be written into <paramref name="directory"/>.</summary>
    /// <param name="reward">The network reward fitted.</param>
    /// <param name="fit">The fit.</param>
    /// <param name="form">Its form.</param>
    /// <param name="ridge">The ridge weight it used.</param>
    /// <param name="source">The samples it was made on.</param>
    /// <param name="directory">The folder the fit is written to (its spec names it).</param>
    public static RewardFitReport Of(OnnxReward reward, RewardFitResult fit, RewardFitForm form, double ridge, RewardFitSource source, string directory)
    {
        ArgumentNullException.ThrowIfNull(reward);
        ArgumentNullException.ThrowIfNull(fit);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(directory);
        return new RewardFitReport(reward.Name, RewardFit.Name(form), SpecIn(fit, form, directory), fit.Rows, source, ridge, fit.TrainSamples,
                                   fit.HeldOutSamples, FiniteOrNull(fit.HeldOutRSquared), FiniteOrNull(fit.HeldOutCorrelation), fit.HeldOutArgmaxAgreement,
                                   FiniteOrNull(fit.TrainRSquared));
    }

    /// <summary>The spec that reads <paramref name="fit"/> from <paramref name="directory"/>: <c>class:fitted@DIR</c> or <c>log-prob:NAME@DIR</c>.</summary>
    public static string SpecIn(RewardFitResult fit, RewardFitForm form, string directory)
    {
        ArgumentNullException.ThrowIfNull(fit);
        return form == RewardFitForm.Linear ? $"class:{fit.ClassNames[fit.Index]}@{directory}" : $"log-prob:{fit.ClassNames[fit.Index]}@{directory}";
    }

    private static double? FiniteOrNull(double v) => double.IsFinite(v) ? v : null;
}
